"""Engines that drive ingest and index together: `local` (in cli/, the default) and `ray` (Ray Data).

They sit above both stages, as `linklens build` does, so neither `ingest` nor `index`
ever imports Ray: the Ray engine only schedules the functions the local engine calls.
"""
