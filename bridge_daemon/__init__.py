"""Bridge daemon: payment events from billing into RabbitMQ with publisher confirms."""
