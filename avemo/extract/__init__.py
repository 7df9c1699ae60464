"""Stage 1: decode each video once into a media cache, then export AlexNet fc7 features."""
