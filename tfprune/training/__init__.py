"""Training on the host: Keras fine-tuning and resumable runs, and learning-rate schedules."""
