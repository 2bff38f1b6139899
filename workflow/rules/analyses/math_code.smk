# Placeholder: the math_code analysis (rules analysis_math_code and fig_math_code) is being written.
