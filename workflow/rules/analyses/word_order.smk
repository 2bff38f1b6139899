# Placeholder: the word_order analysis (rules analysis_word_order and fig_word_order) is being written.
