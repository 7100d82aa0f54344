"""The data set registry and its entries, one file each."""
