"""The papers of the lecture's reading list, reproduced on its data: each study plans its runs, trains them through
the trainer (resumable), and sets its table beside the paper's figures (`cnnlab study`)."""
