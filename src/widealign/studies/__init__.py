"""Studies beyond one training run, each with its plots: Song, Xu & Lafferty's two-layer feedback
alignment (:mod:`.song2021`, :mod:`.song2021_plots`) and the input-weight alignment study
(:mod:`.alignment` runs it, :mod:`.align_runs` scores finished runs)."""
