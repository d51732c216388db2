"""A trained model on disk: the checkpoint record, its verification and atomic save."""
