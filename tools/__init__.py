"""The command-line programs around training, each ``python3 -m tools.NAME``: evaluate, compare,
embed, export, embed_onnx, retrieval, convert_timm_vit; and what only they share (run: a finished run's flags
and model; onnx_export: the ONNX translation; paper_numbers: the papers' published figures)."""
