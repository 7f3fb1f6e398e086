"""`evaluate`: held-out metrics with bootstrap intervals, ROC plots, galleries, model cards."""
