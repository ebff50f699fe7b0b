"""Data: the data sets (``sets``), image folders and their checks (``folders``), the augmentation and
normalisation (``transforms``), a configured set made ready to train (``source``), its loaders (``loaders``:
DataLoader workers, or batches built on the training device by ``device``, with RandAugment as whole-batch
tensor ops in ``augment``), and the pixels' fingerprint (``fingerprint``).

Kept free of imports, so that ``nfbench.data.fingerprint`` loads without torch (scripts/cifar_from_images.py).
"""
