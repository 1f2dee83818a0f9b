"""Portal consumer: finalizes each sale exactly once from RabbitMQ and notifies buyers."""
