"""Models: the CIFAR zoo, the shipped pretrained weights with their cards, and loading a model
named by a flag value (`.keras` file, `pretrained:NAME`, zoo name)."""
