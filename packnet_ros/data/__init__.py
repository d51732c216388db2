"""Data sources: KITTI raw drives (and, later, synthetic drives and bags)."""
