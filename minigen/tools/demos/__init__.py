"""Lecture demos: short scripts that train small models and draw one figure each.

ar_vs_nar   `minigen demo ar-vs-nar`: pixel-by-pixel PixelCNN vs the one-pass NAR baseline.
"""
