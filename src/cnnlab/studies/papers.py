"""The papers' own figures, each with its table and row, that the studies set beside ours.

Checked against two independent transcriptions of each paper's text (the tables as printed) and the authors'
repositories' READMEs (KaimingHe/resnet-1k-layers, liuzhuang13/DenseNet); every figure here was read in those texts,
none from memory. Both papers train on CIFAR-10 with standard augmentation ("C10+"), far longer than our studies.

He, Zhang, Ren, Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016 (arXiv 1603.05027): CIFAR-10 test
error (%), ResNet-110, "the median accuracy of 5 runs" (Sec. 3.1); "fail" is printed where the test error is above
20% (Table 1's caption).

Huang, Liu, van der Maaten, Weinberger, "Densely Connected Convolutional Networks", CVPR 2017 (arXiv 1608.06993):
Table 2, error (%) on C10+ ("evaluated once for each task and model setting", Sec. 4.2).
"""

from __future__ import annotations

from dataclasses import dataclass

IDENTITY_MAPPINGS = "He et al. 2016, Identity Mappings in Deep Residual Networks (arXiv 1603.05027)"
DENSENET = "Huang et al. 2017, Densely Connected Convolutional Networks (arXiv 1608.06993)"


@dataclass(frozen=True)
class PaperFigure:
    """One figure of a paper's table, and what the paper concludes from it about this row against its baseline."""

    where: str  # table and row as the paper prints them: "Table 1, constant scaling 0.5/0.5 (frozen gating)"
    error: str  # as printed: "12.35" or "fail"
    verdict: str  # against the paper's baseline: "worse" | "same" | "better" | "" (the baseline itself)
    network: str = "ResNet-110"  # the column the figure is from


# The identity-mappings family's variants (models/resunits.py VARIANTS), each with the rows of Table 1 or Table 2 of
# the unit we build (the gate's initial bias b_g chosen as the paper's row for it). The paper's verdict is against the
# original unit, 6.61% at ResNet-110 (Tables 1 and 2) and 5.93% at ResNet-164 (Table 2).
IDENTITY: dict[str, tuple[PaperFigure, ...]] = {
    "lecture": (),  # not in the paper: the lecture's unit, without batch norm
    "original": (PaperFigure("Table 1 and Table 2, original", "6.61", ""),
                 PaperFigure("Table 2, original", "5.93", "", "ResNet-164")),
    "scaling": (PaperFigure("Table 1, constant scaling 0.5 on the shortcut, 0.5 on F (frozen gating)", "12.35", "worse"),),
    "gating": (PaperFigure("Table 1, exclusive gating, init b_g = -6", "8.70", "worse"),),
    "shortcut_gating": (PaperFigure("Table 1, shortcut-only gating, init b_g = 0", "12.86", "worse"),),
    "conv_shortcut": (PaperFigure("Table 1, 1x1 conv shortcut", "12.22", "worse"),),
    "dropout_shortcut": (PaperFigure("Table 1, dropout shortcut (0.5)", "fail", "worse"),),
    "bn_after_add": (PaperFigure("Table 2, BN after addition", "8.17", "worse"),
                     PaperFigure("Table 2, BN after addition", "6.50", "worse", "ResNet-164")),
    "relu_before_add": (PaperFigure("Table 2, ReLU before addition", "7.84", "worse"),
                        PaperFigure("Table 2, ReLU before addition", "6.14", "worse", "ResNet-164")),
    "relu_preact": (PaperFigure("Table 2, ReLU-only pre-activation", "6.71", "same"),
                    PaperFigure("Table 2, ReLU-only pre-activation", "5.91", "same", "ResNet-164")),
    "preact": (PaperFigure("Table 2, full pre-activation", "6.37", "better"),
               PaperFigure("Table 2, full pre-activation", "5.46", "better", "ResNet-164")),
}

# What the paper says of the training curves (Sec. 3.2, Fig. 3; Sec. 4.1, Fig. 6), in our words with its figures.
IDENTITY_CLAIMS = (
    "Every shortcut that scales, gates, convolves or drops the identity trains to a higher training error than the "
    "identity (Sec. 3.2, Fig. 3): the paper reads the degradation as an optimisation problem, not overfitting.",
    "BN after addition has difficulty reducing the training loss at the beginning of training (Fig. 6 left).",
    "Full pre-activation has the lowest test error of the placements (Table 2), with a training loss that is "
    "slightly higher at convergence (Fig. 6 right): batch norm's regularisation.",
)

# DenseNet's Table 2 (C10+ error, %): DenseNet-BC's rows and the residual networks they are set beside.
DENSENET_ROWS: tuple[tuple[str, str, str], ...] = (  # (network as printed, parameters, C10+ error)
    ("DenseNet-BC (k=12), depth 100", "0.8M", "4.51"),
    ("DenseNet-BC (k=24), depth 250", "15.3M", "3.62"),
    ("DenseNet-BC (k=40), depth 190", "25.6M", "3.46"),
    ("ResNet (pre-activation), depth 164", "1.7M", "5.46"),
    ("ResNet (pre-activation), depth 1001", "10.2M", "4.62"),
)
DENSENET_CLAIM = ("DenseNet-BC with 0.8M parameters reaches the accuracy of the 1001-layer pre-activation ResNet with "
                  "10.2M (4.51% against 4.62% on C10+; Table 2, Sec. 4.3): about the same error with 90% fewer "
                  "parameters.")
