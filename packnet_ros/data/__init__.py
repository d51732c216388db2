"""Data: KITTI raw drives, synthetic drives, bags, image decoding, and the stream -> triplet rules."""
