"""Report code: the HTML data report, its charts, the augmentation preview and the quality gates."""
