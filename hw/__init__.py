"""What touches the physical unit: GPIO buttons and LEDs, the audio device bridge."""
