"""The command-line programs around training, each ``python3 -m tools.NAME``: evaluate, compare,
embed, export, retrieval, convert_timm_vit; and what only they share (run: a finished run's flags
and model; paper_numbers: the papers' published figures)."""
