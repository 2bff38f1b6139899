# Placeholder: the lds analysis (rules analysis_lds and fig_lds) is being written.
