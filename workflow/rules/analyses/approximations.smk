# Placeholder: the approximations analysis (rules analysis_approximations and fig_approximations) is being written.
