# Placeholder: the keyword_overlap analysis (rules analysis_keyword_overlap and fig_keyword_overlap) is being written.
