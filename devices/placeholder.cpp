// Devices (serial, PCI, virtio) land here.
