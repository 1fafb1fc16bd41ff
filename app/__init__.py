"""Overfit Advisor: diagnoses overfitting training runs and walks the remedy ladder."""
