// A small AML (ACPI Machine Language) builder: just what Tern's DSDT needs —
// scopes, devices, names with integers, strings, EISA ids, packages,
// resource-template buffers, and methods whose body is Notify. Encodings follow ACPI 6.5, section 20.2.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace tern::arch::x86_64::aml {

using Bytes = std::vector<uint8_t>;

// A NameString: "\\_SB_", "PCI0", "_HID". Segments are padded to 4 chars.
Bytes name_string(std::string_view path);
Bytes integer(uint64_t value);   // ZeroOp/OneOp/Byte/Word/DWord/QWord
Bytes string(std::string_view text);
Bytes eisa_id(std::string_view id);  // "PNP0A08" as a compressed DWord
Bytes package(const std::vector<Bytes>& elements);
Bytes name(std::string_view name, const Bytes& value);
Bytes scope(std::string_view name, const std::vector<Bytes>& terms);
Bytes device(std::string_view name, const std::vector<Bytes>& terms);
// Method (name, args, NotSerialized) { terms }
Bytes method(std::string_view name, uint8_t args, const std::vector<Bytes>& terms);
// Notify (target, value)
Bytes notify(std::string_view target, uint64_t value);
// A Buffer holding resource descriptors followed by the end tag.
Bytes resource_template(const std::vector<Bytes>& descriptors);

// Resource descriptors (ACPI 6.5, section 6.4).
Bytes io_port(uint16_t base, uint8_t length);              // IO(Decode16, base, base, 1, length)
Bytes irq(uint8_t line);                                    // IRQNoFlags(){line}
Bytes memory32_fixed(uint32_t base, uint32_t length);       // Memory32Fixed(ReadWrite, ...)
Bytes interrupt(uint32_t gsi);  // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive){gsi}
Bytes word_bus_number(uint16_t min, uint16_t max);          // WordBusNumber(ResourceProducer, ...)
Bytes word_io(uint16_t min, uint16_t max);                  // WordIO(ResourceProducer, ..., EntireRange)
Bytes dword_memory(uint32_t min, uint32_t max);             // DWordMemory(ResourceProducer, NonCacheable, ReadWrite)

// Concatenation helper.
Bytes join(const std::vector<Bytes>& parts);

}  // namespace tern::arch::x86_64::aml
