"""Data preparation: ImageNet (ILSVRC2012) to WebDataset shards with DALI index files."""
