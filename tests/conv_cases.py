"""The awkward convolution shapes every fused path is checked on (tests/nn, tests/reference)."""

# (in, out, kernel, stride, padding, dilation, groups, bias, padding_mode, strategy, rate, input NCHW)
CASES = {
    "cl_k3": (3, 5, 3, 1, 1, 1, 1, True, "zeros", "cl", 2, (2, 3, 7, 9)),
    "cl_nonsquare_s2_tuplepad_grouped": (4, 6, (3, 5), 2, (2, 1), 1, 2, True, "zeros", "cl", 1.5, (1, 4, 9, 8)),
    "cl_depthwise_s2": (6, 6, 3, 2, 1, 1, 6, True, "zeros", "cl", 4, (2, 6, 7, 7)),
    "cl_depthwise_multiplier": (4, 8, 3, 1, 1, 1, 4, True, "reflect", "cl", 2, (2, 4, 6, 5)),
    "cl_dilated_same": (4, 4, 3, 1, "same", 2, 1, True, "zeros", "cl", 3, (3, 4, 8, 6)),
    "cl_even_kernel_same": (3, 4, 4, 1, "same", 1, 1, True, "zeros", "cl", 2, (2, 3, 5, 7)),
    "cl_1x1_s2": (5, 3, 1, 2, 0, 1, 1, True, "zeros", "cl", 2, (2, 5, 5, 5)),
    "cl_nobias_valid": (4, 4, 3, 1, "valid", 1, 1, False, "zeros", "cl", 2, (2, 4, 5, 6)),
    "cl_circular_s2_d2": (2, 3, 3, (2, 1), 2, (2, 1), 1, True, "circular", "cl", 2.3, (2, 2, 9, 7)),
    "ck_k5": (3, 4, 5, 1, 2, 1, 1, True, "zeros", "ck", 2, (2, 3, 7, 7)),
    "ck_k7_s2": (2, 3, 7, 2, 3, 1, 1, True, "zeros", "ck", 1.5, (1, 2, 9, 11)),
    "ck_k9_same": (3, 3, 9, 1, "same", 1, 1, True, "replicate", "ck", 2, (2, 3, 9, 9)),
    "ck_k5_d2_asym": (2, 2, 5, (2, 1), (4, 3), 2, 1, False, "zeros", "ck", 2, (2, 2, 10, 9)),
}
