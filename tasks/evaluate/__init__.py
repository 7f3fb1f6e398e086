"""`evaluate`: test-split metrics (choices tuned on validation) with bootstrap intervals, ROC plots, galleries, model cards."""
