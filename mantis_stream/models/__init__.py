"""Message records and models: pure Python/numpy, no Kafka or Faust inside."""
