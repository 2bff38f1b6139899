# Placeholder: the memorisation analysis (rules analysis_memorisation and fig_memorisation) is being written.
