"""The benchmarks: LAMA-ckl (``lama_ckl``) and TemporalWiki (``temporalwiki``), run by one shared runner
(``runner``: learning-rate selection, φ, resumable method runs, summary, plots) with typed configs and presets
(``config``)."""
