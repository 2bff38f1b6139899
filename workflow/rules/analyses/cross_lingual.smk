# Placeholder: the cross_lingual analysis (rules analysis_cross_lingual and fig_cross_lingual) is being written.
