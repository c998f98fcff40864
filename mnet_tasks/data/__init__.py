"""The data pieces every task shares: the image reader, the bad-file policy, resumable loaders, the base
DataModule, the transforms and the synthetic-data cache."""
