"""The benchmark harness: the model suite against transformers (`suite`), data preparation
(`data`) and the serving path (`serve`)."""
