# Placeholder: the abstraction analysis (rules analysis_abstraction and fig_abstraction) is being written.
