"""The model: backbones (image encoder, frozen prompt encoder and decoder), the prompt head, the box losses."""
