"""liftinv: lifted Bregman training and stable inversion of neural networks for imaging."""
__version__ = "0.1.0"
