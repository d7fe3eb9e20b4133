// The x86-64 boot layer (page tables, boot_params, e820, ACPI) lands here.
