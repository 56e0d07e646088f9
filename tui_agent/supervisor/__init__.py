"""The supervisor process and the executor processes it keeps alive."""
