"""Block test helpers: partition table images, a block system on the bench, a driver played by the test."""
