"""sDDF queue libraries: net, blk and serial, with sDDF's exact byte layouts."""
