"""The models of the study: building them, training them from scratch, evaluating what they learned, and the toy\nmodels of the validation settings."""
