"""Sweeps of runs: the catalogue of packaged families (:mod:`.catalogue`, TOML files in
``families/``), the kinds of run a family may hold (:mod:`.runners`), running a sweep on one
machine or many (:mod:`.sweep`), estimating its cost before it starts (:mod:`.estimate`), and
comparing rules side by side (:mod:`.compare`)."""
