"""The geometry of the paper's inpainting kernel, shared by the torch passes (``inpaint``) and
the compiled CPU loop (``band_kernel``) (docs/design.md, "Inpainting")."""

KERNEL_TAPS = 12  # the binomial kernel C(11, k) / 2^11
# For an even kernel, scipy.signal.convolve2d(..., mode="same") aligns as: pad 6 before, 5 after.
PAD_BEFORE, PAD_AFTER = KERNEL_TAPS // 2, KERNEL_TAPS // 2 - 1
# Growth of the known region per pass: a pixel becomes known when a known pixel lies within
# [-PAD_BEFORE, +PAD_AFTER] of it, so the region grows PAD_AFTER px before and PAD_BEFORE after.
GROW_BEFORE, GROW_AFTER = PAD_AFTER, PAD_BEFORE
