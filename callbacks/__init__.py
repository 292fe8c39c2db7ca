"""Lightning callbacks of lightning-inv: per-epoch invariance evaluation and figure logging."""
