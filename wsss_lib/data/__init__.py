"""Datasets, all materialised in PASCAL VOC layout and read by one reader."""
