"""The LionsOS FAT file-system server and an fs client."""
