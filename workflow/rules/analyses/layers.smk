# Placeholder: the layers analysis (rules analysis_layers and fig_layers) is being written.
