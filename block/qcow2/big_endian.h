// The one place where QCOW2's big-endian on-disk integers (qcow2.txt: "all
// numbers in qcow2 are stored in Big Endian byte order") meet host order.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <type_traits>

namespace tern::block::qcow2 {

template <class T>
  requires std::is_unsigned_v<T>
inline T load_be(const uint8_t* p) {
  T value;
  std::memcpy(&value, p, sizeof value);
  if constexpr (std::endian::native == std::endian::little && sizeof(T) > 1) {
    value = std::byteswap(value);
  }
  return value;
}

template <class T>
  requires std::is_unsigned_v<T>
inline void store_be(uint8_t* p, T value) {
  if constexpr (std::endian::native == std::endian::little && sizeof(T) > 1) {
    value = std::byteswap(value);
  }
  std::memcpy(p, &value, sizeof value);
}

}  // namespace tern::block::qcow2
