"""The benefit side of a method: what a study measured and predicted, read back as evidence."""
