# Placeholder: the validation analysis (rules analysis_validation and fig_validation) is being written.
