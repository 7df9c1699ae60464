"""avemo: audio-visual emotion analysis of videos (modal fusion of AlexNet fc7 features, LSTM, MLP)."""

__version__ = "0.1.0"
