# Placeholder: the roleplay analysis (rules analysis_roleplay and fig_roleplay) is being written.
